# A kernel-chosen destination for a multiple of 2 MiB is 2 MiB aligned: a THP grown by moving stays PMD-mapped.
mmap a 4M huge
touch a 0 2M w
mremap a 0 2M 4M maymove
dump a
touch a 2M 4K w
dump a
