import Foundation
import HostnatAgent
import HostnatContracts
import Logging
import ServiceLifecycle
import Testing

/// SIGTERM reaches a role as graceful shutdown: its children stop in order and it returns, with
/// the last status written. The bound only catches a hang (a child that ignores graceful shutdown
/// keeps the group until its maximum shutdown duration); how long shutdown takes is printed, not
/// asserted: it is about 0.1 s on a quiet machine and several seconds beside a full test run.
@Suite struct AgentLifecycleTests {
  @Test(.timeLimit(.minutes(1))) func gracefulShutdownStopsTheAgent() async throws {
    let dir = tempDir()
    // No controller listens on port 1: the control stream keeps retrying until shutdown.
    let agent = try HostAgent(options: AgentOptions(hostID: "host-1", controller: "127.0.0.1:1", underlay: loopbackAny, stateDir: dir, edge: nil))
    let group = ServiceGroup(services: [agent], logger: Logger(label: "test"))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
      tasks.addTask { try await group.run() }
      try await Task.sleep(for: .milliseconds(1500))
      let asked = ContinuousClock.now
      await group.triggerGracefulShutdown()
      try await tasks.next()
      let took = ContinuousClock.now - asked
      print("agent graceful shutdown took \(took)")
      #expect(took < .seconds(30))
    }
    #expect(FileManager.default.fileExists(atPath: dir + "/status.json"))
    #expect(agent.link.status.connected == false)
  }
}
