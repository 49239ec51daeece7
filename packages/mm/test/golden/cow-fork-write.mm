# A write to a page shared after fork copies it, and a page left with one mapping is reused.
# A private page written before fork is mapped by both processes (mapcount 2) until one side
# writes it.
mmap a 16K
touch a 0 16K w
fork
dump a
# The child's write to page 1 copies it; the parent keeps the original frame, now mapcount 1.
c touch a 4K 4K w
# The parent's write to page 0 copies it too.
touch a 0 4K w
dump a
# Page 0's original frame is now mapped by the child alone: the child's write faults (its PTE is
# write-protected) but reuses the frame, although it was shared after fork.
c touch a 0 4K w
# Same for the parent and page 1.
touch a 4K 4K w
dump a
