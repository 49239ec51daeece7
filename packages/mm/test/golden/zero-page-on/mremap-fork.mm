# A move after fork keeps the pages shared copy-on-write: same frames with mapcount 2, in the child at its new address.
mmap a 64K
mmap b 64K none
touch a 0 64K w
fork
c touch a 0 4K w
c mremap a 0 64K 64K maymove fixed b 0
dump a
c touch a 4K 4K w
dump a
