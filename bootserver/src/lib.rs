//! The boot server: node registry, authenticated check-in, boot states, repository, status page
