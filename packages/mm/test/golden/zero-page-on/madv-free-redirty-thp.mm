# A lazily-freed THP written again is kept by MADV_PAGEOUT, with its PMD split.
mmap a 4M huge
touch a 0 2M w
madvise a 0 2M free
touch a 4K 4K w
madvise a 0 2M pageout
dump a
