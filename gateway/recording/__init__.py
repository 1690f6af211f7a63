"""What the gateway records about its calls besides telemetry: experiment exposures and feedback.

Each recorder is an Observer of the call record (like telemetry) with a bounded queue and a
batch writer; the request path only enqueues.
"""
