// Package testnode is the module's one test scaffold for running xcollect
// nodes:
//
//   - Config writes the configuration file of a node run as
//     `xcollect serve` (free loopback ports, one component, the embedded
//     store or Postgres), used by the SDK, e2e and cmd tests;
//   - Build, Main and Start run the real binary as a separate process
//     (the clients tree must not import server, and crash tests need
//     SIGKILL), with users created by `xcollect user add`;
//   - StartInProcess runs server and component in the test's process on
//     an embedded store, for the server and interop tests.
//
// Postgres is started by internal/pgtest; the poll loop and free ports are
// internal/testutil (WaitFor, FreeAddr), which every test may import
// because it imports nothing from the module.
//
// Read first: Config, Start, StartInProcess.
package testnode
