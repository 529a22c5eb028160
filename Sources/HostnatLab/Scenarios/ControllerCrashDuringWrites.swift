import Foundation
import HostnatProto
import SwiftProtobuf
import Synchronization

struct ControllerCrashDuringWrites: FaultScenario {
  let name = "controller-crash-during-writes"
  let summary = "kill -9 the controller during a burst of admin changes; every change that succeeded is there after restart, none half-applied"

  func inject(_ c: ScenarioContext) async throws {
    let host = c.topology.hosts[0]
    let subnet = c.topology.instances.first { c.natVMs.contains($0.name) }?.subnet ?? "subnet-1"
    let base = c.topology.networks.flatMap(\.subnets).first { $0.name == subnet }?.range.split(separator: ".").prefix(3).joined(separator: ".") ?? "10.240.0"
    let succeeded = CrashLog()
    let controllerPID = c.state.process("controller")?.pid ?? 0
    // Creates burst-1, burst-2, ... as fast as the controller answers until it dies.
    let burst = Task {
      for i in 1...200 {
        do {
          _ = try await c.admin.with { client, options in
            try await client.createInstance(.with {
              $0.instance = .with {
                $0.name = "burst-\(i)"
                $0.host = host
                $0.networkInterfaces = [.with { $0.subnet = subnet; $0.networkIp = "\(base).\(100 + i)" }]
              }
            }, options: options)
          }
          succeeded.add("burst-\(i)")
        } catch {
          return
        }
      }
    }
    try await c.lab.waitUntil(timeout: .seconds(20), "a few changes") { succeeded.count >= 5 }
    c.markFaultStart()
    kill(controllerPID, SIGKILL)
    _ = await burst.result
    c.say("  chaos: controller: SIGKILL pid \(controllerPID) after \(succeeded.count) acknowledged creates")
    try await Task.sleep(for: .seconds(3))
    try await c.chaos(.restart, "controller")
    try await c.admin.waitUntilServing(timeout: .seconds(20))
    let instances = try await c.admin.with { client, options in try await client.listInstances(.init(), options: options).instances.map(\.name) }
    let burstNames = Set(instances.filter { $0.hasPrefix("burst-") })
    let missing = succeeded.names.subtracting(burstNames)
    c.check("every acknowledged change survived", missing.isEmpty,
      "\(succeeded.count) creates acknowledged before the kill, \(burstNames.count) burst instances after restart\(missing.isEmpty ? "" : "; missing \(missing.sorted())")")
    let info = try await c.admin.with { client, options in
      try await client.getNatMappingInfo(.with { $0.region = c.topology.region; $0.router = "router-1" }, options: options)
    }
    let mapped = Set(info.result.map(\.instanceName).filter { $0.hasPrefix("burst-") })
    c.check("none half-applied", mapped == burstNames, "\(burstNames.count) burst instances, \(mapped.count) with NAT allocations")
    c.markFaultEnd()
    try await c.healAndConverge()
    // Put the lab back as it was.
    for name in burstNames.sorted() {
      _ = try await c.admin.with { client, options in try await client.deleteInstance(.with { $0.name = name }, options: options) }
    }
    try await c.lab.waitForConvergence(c.admin, hosts: c.topology.hosts, timeout: .seconds(20))
  }
}

/// Names of admin changes the controller acknowledged, shared with the burst task.
final class CrashLog: Sendable {
  private let state = Mutex(Set<String>())
  func add(_ name: String) { state.withLock { _ = $0.insert(name) } }
  var names: Set<String> { state.withLock { $0 } }
  var count: Int { state.withLock { $0.count } }
}
