# A shrink may span several VMAs (the tail is unmapped across them); a same-size mremap is an in-place no-op.
mmap a 64K
touch a 0 64K w
mprotect a 16K 16K r
mremap a 0 64K 8K
dump a
mremap a 0 64K 64K
mremap a 0 8K 8K
mremap a 60K 8K 8K
