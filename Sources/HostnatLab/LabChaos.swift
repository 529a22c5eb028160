import Foundation
import HostnatContracts

/// Faults by hand (`hostnat lab chaos`): signals to one component of a running lab.
public enum ChaosAction: String, CaseIterable, Sendable {
  case kill, pause, resume, restart, partition, heal
}

extension Lab {
  /// Applies `action` to `component` (`controller`, `edge`, `agent/HOST`, `vm/NAME`) and
  /// returns a one-line account of what was done.
  @discardableResult
  public func chaos(_ action: ChaosAction, _ component: String, graceful: Bool = false) async throws -> String {
    var state = try LabState.load(dir)
    guard let process = state.process(component) else {
      throw LabError("no component \(component) in this lab (components: \(state.processes.map(\.name).joined(separator: ", ")))")
    }
    switch action {
    case .partition, .heal:
      var faults = try controlFaults(component)
      faults.partitioned = action == .partition
      try setControlFaults(component, faults)
      return "\(component): control channel \(action == .partition ? "cut (data path stays up)" : "healed")"
    case .kill:
      guard Processes.isRunning(process.pid) else { return "\(component) (pid \(process.pid)) was not running" }
      kill(process.pid, SIGKILL)
      try await waitUntil(timeout: .seconds(5)) { Processes.reapChildren(); return !Processes.isRunning(process.pid) }
      return "\(component): SIGKILL pid \(process.pid)"
    case .pause:
      guard Processes.isRunning(process.pid) else { throw LabError("\(component) (pid \(process.pid)) is not running") }
      kill(process.pid, SIGSTOP)
      return "\(component): SIGSTOP pid \(process.pid)"
    case .resume:
      guard Processes.isRunning(process.pid) else { throw LabError("\(component) (pid \(process.pid)) is not running") }
      kill(process.pid, SIGCONT)
      return "\(component): SIGCONT pid \(process.pid)"
    case .restart:
      var how = "was not running"
      if Processes.isRunning(process.pid) {
        if graceful {
          await Processes.stop([process.pid])
          how = "SIGTERM"
        } else {
          kill(process.pid, SIGCONT)
          kill(process.pid, SIGKILL)
          try await waitUntil(timeout: .seconds(5)) { Processes.reapChildren(); return !Processes.isRunning(process.pid) }
          how = "SIGKILL"
        }
      }
      var restarted = process
      restarted.pid = try Processes.spawn(state.executable, process.arguments, log: process.log)
      state.replace(restarted)
      try state.save()
      return "\(component): \(how) pid \(process.pid), started again as pid \(restarted.pid)"
    }
  }

  /// The faults file of the proxy on `component`'s control connection.
  func faultsPath(_ component: String) throws -> String {
    let state = try LabState.load(dir)
    let key = component.hasPrefix("agent/") ? String(component.dropFirst("agent/".count)) : component
    guard component == "edge" || component.hasPrefix("agent/"), let proxy = state.process("proxy/\(key)") else {
      throw LabError("\(component) has no control channel to disturb (agent/HOST or edge)")
    }
    return proxy.stateDir + "/faults.json"
  }

  public func controlFaults(_ component: String) throws -> ControlFaults { ControlFaults.load(try faultsPath(component)) }

  /// Sets the faults on `component`'s control channel (the proxy applies them within 100 ms).
  public func setControlFaults(_ component: String, _ faults: ControlFaults) throws {
    try faults.save(try faultsPath(component))
  }

  /// Polls `condition` every 20 ms until it holds or `timeout` passes (then throws).
  public func waitUntil(timeout: Duration, _ what: String = "condition", _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if try await condition() { return }
      try await Task.sleep(for: .milliseconds(20))
    }
    throw LabError("timed out after \(timeout) waiting for \(what)")
  }
}
