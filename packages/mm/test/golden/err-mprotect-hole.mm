# mprotect over a hole fails with ENOMEM after changing the part before the hole.
# The part after the hole keeps its protection.
mmap a 32K
touch a 0 32K w
munmap a 12K 4K
mprotect a 0 32K r
dump a
touch a 8K 4K w
touch a 16K 4K w
