# Minimal local stub: streamproc uses only scipy.optimize.linear_sum_assignment.
