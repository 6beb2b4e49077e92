//! `nomad-init`: PID 1 of NomadOS when the kernel starts it, a command-line tool otherwise.

fn main() {
    if std::process::id() == 1 {
        nomad_init::pid1::main();
    }
    std::process::exit(nomad_init::cli::main(std::env::args_os().collect()));
}
