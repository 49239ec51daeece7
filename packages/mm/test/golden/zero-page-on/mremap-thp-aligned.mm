# A whole PMD-mapped THP moved between 2 MiB-aligned addresses stays PMD-mapped with the same frames.
mmap a 4M huge
mmap b 4M huge
touch a 0 2M w
mremap a 0 2M 2M maymove fixed b 2M
dump a
dump b
