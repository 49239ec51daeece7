# mremap's EFAULT cases: an unmapped old address, and an old range spanning two VMAs when growing or moving; a shrink may span them.
mmap a 64K
touch a 0 64K w
munmap a 16K 4K
mremap a 16K 4K 8K maymove
mprotect a 32K 4K r
mremap a 24K 16K 32K maymove
mremap a 24K 16K 4K
dump a
