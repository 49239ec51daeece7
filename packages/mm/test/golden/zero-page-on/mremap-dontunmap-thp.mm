# MREMAP_DONTUNMAP of a whole THP moves its PMD; the old range, still VM_HUGEPAGE and without a table, faults a new THP.
mmap a 8M huge
touch a 0 2M w
mremap a 0 2M 2M maymove fixed a 4M dontunmap
dump a
touch a 0 4K w
dump a
