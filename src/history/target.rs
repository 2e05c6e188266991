//! Where the history lives: the SQLite file or PostgreSQL's `dburl`, shown without a password.

use crate::config::dburl::DbUrl;

/// Where the history lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL connection string (may hold a password: never shown, see [`Target::show`]).
    Postgres(String),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.show())
    }
}

impl Target {
    /// For logs and pages: the SQLite path, or PostgreSQL's user@host:port/dbname without any password.
    pub fn show(&self) -> String {
        match self {
            Target::Sqlite(p) => format!("sqlite {}", p.display()),
            Target::Postgres(url) => match DbUrl::parse(url).ok().and_then(|u| u.rest.parse::<postgres::Config>().ok())
            {
                Some(c) => {
                    let host = c
                        .get_hosts()
                        .first()
                        .map(|h| match h {
                            postgres::config::Host::Tcp(s) => s.clone(),
                            postgres::config::Host::Unix(p) => p.display().to_string(),
                        })
                        .unwrap_or_default();
                    let port = c.get_ports().first().copied().unwrap_or(5432);
                    format!(
                        "postgresql://{}@{host}:{port}/{}",
                        c.get_user().unwrap_or(""),
                        c.get_dbname().unwrap_or("")
                    )
                }
                None => "postgresql (unreadable dburl)".into(),
            },
        }
    }

    /// PostgreSQL: what `dburl`'s sslmode means ("sslmode=require: TLS, certificate not verified").
    pub fn tls(&self) -> Option<String> {
        match self {
            Target::Sqlite(_) => None,
            Target::Postgres(url) => DbUrl::parse(url).ok().map(|u| u.describe()),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Sqlite(_) => "sqlite",
            Target::Postgres(_) => "postgresql",
        }
    }
}
