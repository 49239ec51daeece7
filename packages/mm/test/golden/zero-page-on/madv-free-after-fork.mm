# After fork MADV_FREE and MADV_PAGEOUT skip the pages parent and child both map; the pages each side owns alone are freed and discarded.
mmap a 32K
touch a 0 32K w
fork
c touch a 0 8K w
madvise a 0 32K free
madvise a 0 32K pageout
dump a
