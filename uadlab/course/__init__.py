"""What a course needs beyond the labs themselves.

- :mod:`~uadlab.course.exercises`: the checks behind the labs' exercises, with hints for the student
  and a pass or fail for nbgrader's autograder.
"""
