//! PID 1: the boot manager on the CD and the supervisor of the installed node
