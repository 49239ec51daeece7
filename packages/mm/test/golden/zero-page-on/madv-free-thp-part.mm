# MADV_FREE of part of a PMD-mapped THP splits the folio (its never-written pages become the zero page) and frees only the pages in the range.
mmap a 4M huge
touch a 0 1M w
madvise a 512K 1M free
dump a
madvise a 0 2M pageout
dump a
