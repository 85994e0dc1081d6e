// The start-up floor for `make bench`: a statically linked Swift program
// that prints a line and exits.
print("hello")
