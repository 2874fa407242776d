//! Boots the real ISO in QEMU against a real boot server: the end-to-end scenarios
