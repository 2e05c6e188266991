//! The dashboard: one page shipped inside the binary (inline CSS, JS and SVG; nothing fetched
//! from elsewhere). It reads the JSON API every 15 s: pool figures, the hashrate chart (last
//! hour and day), workers, blocks with confirmations, network difficulty and the expected time
//! to a block. Narrow screens get one column and scrolling tables.

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

#[cfg(test)]
mod tests {
    /// Nothing on the page is loaded from another origin.
    #[test]
    fn self_contained() {
        let p = super::PAGE;
        for bad in ["src=\"http", "href=\"http", "@import", "url(http", "//cdn"] {
            assert!(!p.contains(bad), "{bad}");
        }
        assert!(p.contains("name=\"viewport\""));
    }
}
