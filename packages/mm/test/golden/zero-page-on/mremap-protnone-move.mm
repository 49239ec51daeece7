# A PROT_NONE range moves with its pages, which are readable again at the new address after mprotect.
mmap a 64K
touch a 0 64K w
mprotect a 0 64K none
mremap a 0 64K 128K maymove
dump a
mprotect a 0 128K rw
touch a 0 128K r
dump a
