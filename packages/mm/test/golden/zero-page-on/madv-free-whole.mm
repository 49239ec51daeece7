# MADV_FREE leaves every page mapped with its frame; a write re-dirties a page without a fault and MADV_PAGEOUT then discards only the clean ones, which read back as the zero page.
mmap a 64K
touch a 0 64K w
madvise a 0 64K free
dump a
touch a 0 16K w
touch a 16K 16K r
madvise a 0 64K pageout
dump a
touch a 0 64K r
dump a
