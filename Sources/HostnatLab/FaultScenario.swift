import Foundation

/// A fault injected into a running default lab under traffic. The harness (`run(on:)`) joins the
/// lab in the scenario's directory or brings one up there, lets traffic settle, calls `inject`,
/// then checks what the scenario's `expectations` promise about the NATed VMs' traffic and that
/// no NAT IP:port is held by two hosts.
public protocol FaultScenario: LabScenario {
  /// What the harness checks after the fault.
  var expectations: ScenarioExpectations { get }
  /// Injects the fault, makes the scenario's own checks, and heals.
  func inject(_ c: ScenarioContext) async throws
}

extension FaultScenario {
  public var topology: ScenarioTopology { .default }
  public var joinsRunningLab: Bool { true }
  public var expectations: ScenarioExpectations { .lossless }

  public func run(on lab: Lab) async throws -> any ScenarioOutcome {
    let topology = self.topology.parsed
    var ownLab = false
    let state: LabState
    if let existing = try? LabState.load(lab.dir), existing.processes.contains(where: { Processes.isRunning($0.pid) }) {
      state = existing
      lab.say("using the lab running in \(lab.dir)")
    } else {
      state = try await lab.up(self.topology)
      ownLab = true
    }
    let context = try ScenarioContext(lab: lab, state: state, topology: topology)
    lab.say("\nscenario \(name): \(summary)")
    try await Task.sleep(for: .seconds(2))
    let start = context.reports()
    do {
      try await inject(context)
    } catch {
      context.check("scenario ran to the end", false, "\(error)")
    }
    try await Task.sleep(for: .seconds(2))
    context.checkNoBlockOwnedTwice()
    let end = context.reports()
    let measured = context.natVMs.subtracting(context.excluded)
    let total = TrafficTotals.between(start, end, measured)
    let window = context.faultWindow
    let fault = TrafficTotals.between(window.start ?? start, window.end ?? end, measured)
    checkExpectations(context, total: total, fault: fault)
    if ownLab { try? await lab.down() }
    let checks = context.checks.list
    let passed = checks.allSatisfy(\.passed)
    lab.say("\n\(passed ? "PASSED" : "FAILED"): \(checks.filter(\.passed).count)/\(checks.count) checks held")
    return ScenarioReport(
      scenario: name, passed: passed, checks: checks, packets_sent: total.sent, packets_lost: total.unanswered,
      flows_broken: total.tcpBroken, new_flows_during_fault: fault.churnSucceeded, new_flows_failed_during_fault: fault.churnFailed,
      converge_ms: context.convergeMs, dir: lab.dir)
  }

  /// The checks `expectations` promise, over the whole run (`total`) and the fault's window.
  func checkExpectations(_ context: ScenarioContext, total: TrafficTotals, fault: TrafficTotals) {
    switch expectations.loss {
    case .none:
      context.check("no packet lost", total.sent > 0 && total.unanswered == 0, total.lossText)
    case .faultOnly(let why):
      // Bounded: the fault may cost what is in flight during it, not a share of the run.
      context.check("packets lost only by the fault itself", total.sent > 0 && total.unanswered * 20 <= total.sent,
        "\(total.lossText); at most 5% may be lost (\(why))")
    }
    switch expectations.flows {
    case .unbroken:
      context.check("no flow broken", total.tcpBroken == 0, "\(total.tcpBroken) TCP connections broken")
    case .brokenOnPurpose:
      context.check("broken flows reported", total.tcpBroken > 0, "\(total.tcpBroken) TCP connections broken, as intended")
    case .reconnect:
      context.check("TCP connections to the restarted servers come back", total.tcpEstablished >= total.tcpBroken,
        "\(total.tcpBroken) broken by the servers' restart, \(total.tcpEstablished) established again")
    }
    context.check("new flows during the fault", fault.churnSucceeded > 0 && (expectations.newFlowsMayFail || fault.churnFailed == 0),
      "\(fault.churnSucceeded) new TCP connections, \(fault.churnFailed) failed")
  }
}
