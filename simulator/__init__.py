"""The runner simulator: drives a running Picool stack through its public HTTP API only (``picool simulate``)."""
