//! Builds, signs, customises and inspects the node boot CD (hybrid BIOS/UEFI ISO)
