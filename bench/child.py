"""What the benchmarks' fresh interpreters share: their peak memory, and a Lambda context for a handler."""

CHILD_PRELUDE = r"""

def rss_mb():
    # VmHWM: this process's peak resident set (ru_maxrss would also count the parent's, inherited at fork).
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024


class Context:
    function_name = "bench"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    aws_request_id = "bench-request"

    def get_remaining_time_in_millis(self):
        return 30000
"""
