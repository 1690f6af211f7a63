"""What the gateway tells the outside: call records, span attributes, OTel export, metrics, logs."""
