@testable import HostnatLab
import Testing

/// The scenarios declare what the runner used to decide by name: which lab they need and what
/// the fault harness may forgive.
@Suite struct ScenarioCatalogTests {
  @Test func namesAreUniqueAndListedInOrder() {
    let names = LabScenarios.all.map(\.name)
    #expect(Set(names).count == names.count)
    #expect(names == [
      "controller-kill", "controller-pause", "agent-restart", "edge-restart", "control-partition", "control-chaos", "bad-config",
      "drain-ip", "remove-ip-undrained", "controller-crash-during-writes", "dpa-crash", "port-exhaustion", "serverless-egress", "vpc-edges",
    ])
    #expect(LabScenarios.named("vpc-edges")?.name == "vpc-edges")
    #expect(LabScenarios.named("demo") == nil)
  }

  @Test func ownLabScenariosRunTheServerlessTopology() {
    let own = LabScenarios.all.filter { !$0.joinsRunningLab }
    #expect(own.map(\.name) == ["serverless-egress", "vpc-edges"])
    #expect(own.allSatisfy { $0.topology.file == "deploy/lab/serverless.yaml" })
    #expect(LabScenarios.all.filter(\.joinsRunningLab).allSatisfy { $0.topology.file == "deploy/lab/default.yaml" })
    #expect(!DemoScenario().joinsRunningLab && DemoScenario().topology.name == "default")
  }

  @Test func onlyRestartsAndAnUndrainedRemovalMayLosePackets() {
    let faults = LabScenarios.all.compactMap { $0 as? any FaultScenario }
    #expect(faults.count == 12)
    let lossy = faults.filter(\.expectations.newFlowsMayFail).map(\.name)
    #expect(lossy == ["agent-restart", "edge-restart", "remove-ip-undrained"])
    let flows = Dictionary(uniqueKeysWithValues: faults.map { ($0.name, "\($0.expectations.flows)") })
    #expect(flows["edge-restart"] == "reconnect")
    #expect(flows["remove-ip-undrained"] == "brokenOnPurpose")
    #expect(flows.filter { $0.value != "unbroken" }.count == 2)
  }

  @Test func checksRecordedFromManyTasksAreAllKept() async {
    let checks = LabChecks(say: { _ in })
    await withTaskGroup(of: Void.self) { group in
      for i in 0..<200 { group.addTask { checks.add("check \(i)", i % 2 == 0, "") } }
    }
    #expect(checks.list.count == 200)
    #expect(checks.list.filter(\.passed).count == 100)
  }
}
