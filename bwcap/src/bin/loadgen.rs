//! `bwcap-loadgen`: bounded test traffic from inside a sliver's cgroup, for
//! bwcap's tests (never installed on a node).

fn main() {
    std::process::exit(bwcap::testbed::loadgen::main(std::env::args_os().skip(1)));
}
