"""The agreement's rules and the records they work on: pure, no I/O."""
