# MADV_FREE of a whole THP already split to PTEs marks it lazily freed without splitting the folio; MADV_PAGEOUT then discards it whole.
mmap a 4M huge
touch a 0 2M w
mprotect a 0 2M r
mprotect a 0 1M rw
madvise a 0 2M free
dump a
madvise a 0 2M pageout
dump a
