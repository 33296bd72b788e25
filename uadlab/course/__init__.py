"""Running the labs as a course: a course pack of every run the labs need, trained once, read by every student.

:mod:`uadlab.course.pack` prepares, verifies and lends a pack (``uadlab course prepare``, ``uadlab course
verify``; a lab's ``PACK`` parameter or ``$UADLAB_PACK``).
"""

from uadlab.course.pack import NO_PACK, PACK_FILE, PACK_VARIABLE, Pack, prepare_pack, use_pack, verify_pack

__all__ = ["NO_PACK", "PACK_FILE", "PACK_VARIABLE", "Pack", "prepare_pack", "use_pack", "verify_pack"]
