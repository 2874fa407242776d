//! Builds the node OS packages (kernel, base, sliver-ref) into a pkgsign repository
