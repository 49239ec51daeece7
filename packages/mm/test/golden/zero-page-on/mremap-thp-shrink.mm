# Shrinking a THP with mremap splits its PMD and unmaps the tail; the kept pages keep their frames.
mmap a 4M huge
touch a 0 2M w
mremap a 0 2M 1M
dump a
touch a 1M 4K r
