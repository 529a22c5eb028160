import Foundation
import HostnatNetns

/// Names and addresses of a lab's namespaces (`hostnat lab up --netns`), and their clean-up.
public enum NetnsLab {
  /// The Internet namespace's own address: in 192.0.2.0/24 beside the edge's emulated servers
  /// (.10, .20, .30 in the default topology), never one a VM could be given.
  public static let internetAddress = "192.0.2.100"
  /// More public addresses real servers can listen on in the Internet namespace.
  public static let internetServerIPs = ["192.0.2.101", "192.0.2.102"]

  /// Short and unique per lab dir: Linux keeps the names in /run/netns, shared by every lab on
  /// the machine.
  public static func prefix(labDir: String) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in labDir.utf8 {
      hash ^= UInt64(byte)
      hash = hash &* 0x100_0000_01b3
    }
    return "hn" + String(String(hash, radix: 16).suffix(6)) + "-"
  }

  public static func namespace(labDir: String, role: String) -> String { prefix(labDir: labDir) + role }

  /// The namespace `lab exec TARGET` runs in: `vm/NAME` or `internet`.
  public static func namespace(labDir: String, target: String) throws(LabError) -> String {
    let role: String
    if target == "internet" {
      role = "internet"
    } else if target.hasPrefix("vm/"), target.count > 3 {
      role = "vm-" + target.dropFirst(3)
    } else {
      throw LabError("\(target.debugDescription) is not vm/NAME or internet")
    }
    let name = namespace(labDir: labDir, role: role)
    guard NetworkNamespace.list().contains(name) else {
      throw LabError("no namespace for \(target) (is the lab up with --netns? namespaces: \(NetworkNamespace.list().filter { $0.hasPrefix(prefix(labDir: labDir)) }.joined(separator: ", ")))")
    }
    return name
  }

  /// Deletes every namespace of this lab that is still there, after ending the programs that
  /// run inside (`lab exec` servers): deleting a namespace does not stop its processes, which
  /// would live on in an unnamed namespace nobody can reach.
  public static func removeNamespaces(labDir: String) {
    let mine = prefix(labDir: labDir)
    let names = NetworkNamespace.list().filter { $0.hasPrefix(mine) }
    for signal in [SIGTERM, SIGKILL] {
      var signalled = false
      for name in names {
        for pid in pids(in: name) {
          kill(pid, signal)
          signalled = true
        }
      }
      if signalled && signal == SIGTERM { usleep(300_000) }
    }
    for name in names { try? NetworkNamespace(name: name).delete() }
  }

  static func pids(in namespace: String) -> [pid_t] {
    guard let result = try? Command.run(["ip", "netns", "pids", namespace]), result.succeeded else { return [] }
    return result.standardOutput.split(whereSeparator: \.isWhitespace).compactMap { pid_t(String($0)) }
  }
}
