fn main() {
    std::process::exit(ckpool::cli::main());
}
