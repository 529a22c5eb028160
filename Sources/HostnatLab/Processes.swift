import Foundation

/// glibc's POSIX_SPAWN_SETSID (0x80), hidden from Swift behind _GNU_SOURCE.
let posixSpawnSetSID: Int32 = 0x80

/// Starting, signalling and checking the lab's processes. Each runs in its own session (setsid),
/// so a Ctrl-C in the terminal that ran `lab up` does not take the cluster down with it, and
/// its output goes to its own log file.
public enum Processes {
  /// The running hostnat binary, which the lab starts again in each role.
  public static var selfExecutable: String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
  }

  /// Starts `executable arguments` detached, stdout and stderr appended to `log`. Returns the pid.
  public static func spawn(_ executable: String, _ arguments: [String], log: String) throws -> Int32 {
    try spawn(executable, arguments, log: Optional(log))
  }

  /// Runs `executable arguments` in the foreground with this process's stdin, stdout and stderr,
  /// and returns its exit status (128 + signal when a signal ended it).
  public static func runInForeground(_ executable: String, _ arguments: [String]) throws -> Int32 {
    let pid = try spawn(executable, arguments, log: nil)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let signal = status & 0x7f
    return signal == 0 ? (status >> 8) & 0xff : 128 + signal
  }

  /// With a log: detached (new session), output to the log. Without: stdio inherited, same session.
  /// Either way the child gets default signal dispositions and an empty mask: a thread of the
  /// cooperative pool blocks nearly every signal, and a child that inherited that mask could not
  /// be stopped with SIGTERM or Ctrl-C.
  static func spawn(_ executable: String, _ arguments: [String], log: String?) throws -> Int32 {
    closeOnExec()
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let log {
      posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
      posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
      posix_spawn_file_actions_adddup2(&actions, 1, 2)
    }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // Default signal dispositions and an empty mask, whatever the parent had.
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attributes, &empty)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16((log == nil ? 0 : posixSpawnSetSID) | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
    guard rc == 0 else { throw LabError("cannot start \(executable): \(String(cString: strerror(rc)))") }
    return pid
  }

  /// Marks every open descriptor above stderr close-on-exec, so a long-lived child does not keep
  /// the lab's sockets, or a pipe of whoever ran `lab up`, open for its whole life (a caller
  /// waiting for `lab up` to finish would otherwise wait for the whole cluster).
  static func closeOnExec() {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
    for entry in entries {
      guard let fd = Int32(entry), fd > 2 else { continue }
      let flags = fcntl(fd, F_GETFD)
      if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
    }
  }

  /// True when `pid` runs and is a hostnat process (a recycled pid of another program is not ours).
  public static func isRunning(_ pid: Int32) -> Bool {
    guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
    // A zombie (our child that exited, not yet reaped) does not run.
    if let close = stat.lastIndex(of: ")") {
      let state = stat[stat.index(close, offsetBy: 2)]
      if state == "Z" || state == "X" { return false }
    }
    let cmdline = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
    return String(decoding: cmdline, as: UTF8.self).contains("hostnat")
  }

  /// True when `pid` is stopped (SIGSTOP).
  public static func isStopped(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state == "T" || state == "t"
  }

  /// Reaps any exited children so they do not linger as zombies while the lab runs.
  public static func reapChildren() {
    var status: Int32 = 0
    while waitpid(-1, &status, WNOHANG) > 0 {}
  }

  /// SIGTERM, then SIGKILL for whatever still runs after `grace`. Returns the pids that needed SIGKILL.
  @discardableResult
  public static func stop(_ pids: [Int32], grace: Duration = .seconds(5)) async -> [Int32] {
    let running = pids.filter(isRunning)
    for pid in running {
      kill(pid, SIGCONT)  // a paused process cannot act on SIGTERM
      kill(pid, SIGTERM)
    }
    let deadline = ContinuousClock.now + grace
    while ContinuousClock.now < deadline {
      reapChildren()
      if !running.contains(where: isRunning) { return [] }
      try? await Task.sleep(for: .milliseconds(50))
    }
    let stubborn = running.filter(isRunning)
    for pid in stubborn { kill(pid, SIGKILL) }
    for _ in 0..<40 where stubborn.contains(where: isRunning) {
      reapChildren()
      try? await Task.sleep(for: .milliseconds(50))
    }
    return stubborn
  }

  /// A port on 127.0.0.1 free for both TCP and UDP, below the kernel's ephemeral range. The port
  /// is only handed to a process a moment later; picked from the ephemeral range (bind to 0), it
  /// could meanwhile become the local port of any outgoing connection on the machine, and the
  /// process would fail to bind it. Below the range only another lab picking the same port at the
  /// same moment can take it.
  public static func freePort() throws -> UInt16 {
    let range = outsideEphemeralRange()
    for _ in 0..<200 {
      let candidate = UInt16.random(in: range)
      if bindable(candidate, type: Int32(SOCK_STREAM.rawValue)) && bindable(candidate, type: Int32(SOCK_DGRAM.rawValue)) {
        return candidate
      }
    }
    throw LabError("no free port on 127.0.0.1 in \(range)")
  }

  /// 10000 up to the start of `ip_local_port_range` (32768 by default), or above its end when it
  /// starts too low to leave 2000 ports below.
  static func outsideEphemeralRange() -> ClosedRange<UInt16> {
    let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
    let bounds = text.split(whereSeparator: \.isWhitespace).compactMap { UInt16($0) }
    let (low, high) = bounds.count == 2 ? (bounds[0], bounds[1]) : (32768, 60999)
    if low > 12000 { return 10000...(low - 1) }
    return high < 63000 ? (high + 1)...65535 : 10000...65535
  }

  static func bindable(_ port: UInt16, type: Int32) -> Bool {
    let fd = socket(AF_INET, type, 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = port.bigEndian
    return withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
  }
}
