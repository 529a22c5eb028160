import Foundation
import HostnatNetns
import Testing

/// `hostnat bench dataplane`'s measurement, short: both paths come up, carry traffic, give sane
/// figures, and leave nothing behind. Speed is measured, never asserted.
@Suite(
  "Dataplane bench: kernel NAT vs hostnat (root)", .serialized,
  .enabled(if: DataplaneBench.unavailableReason() == nil, "\(DataplaneBench.unavailableReason() ?? ""): DataplaneBench.unavailableReason"))
struct DataplaneBenchTests {
  @Test("a short run: both paths deliver, percentiles ordered, ratio = hostnat/kernel, JSON keys, nothing left")
  func shortRun() throws {
    let prefix = "hnbt-\(getpid())"
    // 50 ms of flooding per path: enough to check the machinery, short enough not to starve the
    // labs other suites run at the same time on a small machine (their checks count lost packets).
    let options = DataplaneBenchOptions(rounds: 1, duration: .milliseconds(50), pings: 200, namePrefix: prefix)
    let result = try DataplaneBench.run(options)

    #expect(result.kernelPPS > 0, "\(result.text)")
    #expect(result.hostnatPPS > 0, "\(result.text)")
    #expect(result.ratio == result.hostnatPPS / result.kernelPPS)
    for (p50, p99) in [(result.kernelP50Us, result.kernelP99Us), (result.hostnatP50Us, result.hostnatP99Us)] {
      #expect(p50 > 0 && p99 > 0 && p50 <= p99, "\(result.text)")
    }
    #expect(result.samples.map(\.path) == ["kernel", "hostnat"])
    for s in result.samples {
      #expect(s.received > 0 && s.received <= s.sent, "\(s)")
      #expect(s.pingsAnswered > 0 && s.pingsAnswered <= 200, "\(s)")
    }
    // The hostnat path really translated: the agent saw the generator's packets.
    #expect(result.hostnatCounters.agentTranslatedOut >= result.samples[1].received)

    let object = try #require(try JSONSerialization.jsonObject(with: Data(result.json().utf8)) as? [String: Any])
    for key in ["kernel_pps", "hostnat_pps", "ratio", "kernel_p50_us", "hostnat_p50_us", "kernel_p99_us", "hostnat_p99_us"] {
      #expect(object[key] is NSNumber, "missing \(key) in \(result.json())")
    }
    // JSONSerialization may round the last bit differently from JSONEncoder.
    #expect(abs(((object["ratio"] as? NSNumber)?.doubleValue ?? -1) - result.ratio) < 1e-9)
    let decoded = try JSONDecoder().decode(DataplaneBenchResult.self, from: Data(result.json().utf8))
    #expect(decoded == result)
    #expect(result.text.contains("hostnat/kernel"))

    // Every namespace of the run is gone (veths, TUN devices and the nft table lived inside them).
    #expect(result.namePrefix == prefix)
    #expect(NetworkNamespace.list().filter { $0.hasPrefix(prefix) } == [])
    let links = try Command.check(["ip", "-o", "link", "show"]).standardOutput
    #expect(!links.contains("bk0") && !links.contains("bk1") && !links.contains("bk2") && !links.contains("bk3"), "\(links)")
  }

  @Test("bad options are refused before anything is created")
  func badOptions() {
    let prefix = "hnbt-\(getpid())-bad"
    for options in [
      DataplaneBenchOptions(rounds: 0, namePrefix: prefix), DataplaneBenchOptions(pings: 0, namePrefix: prefix),
      DataplaneBenchOptions(payloadBytes: 4000, namePrefix: prefix), DataplaneBenchOptions(batchSize: 0, namePrefix: prefix),
    ] {
      #expect(throws: NetnsError.self) { try DataplaneBench.run(options) }
    }
    #expect(NetworkNamespace.list().filter { $0.hasPrefix(prefix) } == [])
  }
}
