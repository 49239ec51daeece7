# Shrinking with mremap is always in place and unmaps the tail; a touch there is a segv.
mmap a 64K
touch a 0 64K w
mremap a 0 64K 32K
dump a
touch a 32K 4K r
