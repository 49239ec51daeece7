# MADV_PAGEOUT of a whole PMD-mapped THP splits its PMD and its folio: written pages keep their frames, never-written ones become the zero page.
mmap a 4M huge
touch a 0 1M w
madvise a 0 2M pageout
dump a
