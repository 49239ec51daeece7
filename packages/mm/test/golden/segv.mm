# A touch the VMA does not allow ends in SIGSEGV at that page, after faulting in those before it.
# Refused: a write to a read-only page, any access to a PROT_NONE page, any access to an
# unmapped page.
mmap a 32K
mprotect a 8K 4K r
mprotect a 16K 4K none
munmap a 24K 4K
touch a 0 32K w
touch a 8K 24K r
touch a 20K 12K r
dump a
