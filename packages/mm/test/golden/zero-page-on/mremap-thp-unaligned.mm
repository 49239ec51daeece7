# A THP moved to an unaligned address, or moved in part, is split to PTEs first: same frames, no PMD.
mmap a 4M huge
mmap b 4M huge
touch a 0 2M w
mremap a 0 2M 2M maymove fixed b 64K
dump a
dump b
mmap c 4M huge
mmap d 4M huge
touch c 0 2M w
mremap c 0 1M 1M maymove fixed d 0
dump c
dump d
