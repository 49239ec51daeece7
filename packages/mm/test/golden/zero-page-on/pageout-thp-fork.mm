# After fork MADV_PAGEOUT and MADV_FREE leave a THP both processes map as it is.
mmap a 4M huge
touch a 0 2M w
fork
c touch a 2M 4K r
madvise a 0 2M free
madvise a 0 2M pageout
madvise a 0 1M pageout
dump a
