# MADV_PAGEOUT without swap keeps ordinary private pages (and zero-page mappings) as they are.
mmap a 64K
touch a 0 32K w
touch a 32K 32K r
madvise a 0 64K pageout
dump a
