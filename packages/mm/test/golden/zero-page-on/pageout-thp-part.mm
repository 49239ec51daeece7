# MADV_PAGEOUT of part of a THP splits the folio too; the pages outside the range are kept, unwritten ones as the zero page.
mmap a 4M huge
touch a 0 2M w
madvise a 1M 4K pageout
touch a 2M 4K w
dump a
