"""The sandbox's launcher: runs inside the child process before the model-written program.

minisir.sandbox starts it as `python -I -S -B sandbox_launcher.py CONFIG_JSON` (no site, no user
environment, no bytecode writes; with -I the script's own folder is not on sys.path). Keep it
dependency-free and small: it isolates the process (network namespace, uid, rlimits, audit hook),
reports what it achieved on the status pipe, then executes the program as __main__.
"""

if __name__ != "__main__":  # it isolates the very process it runs in: never as an import
    raise ImportError("minisir.sandbox_launcher runs only as the sandbox's script")
import sys, os, json, resource
_cfg = json.loads(sys.argv[1])
_st = {"netns": False, "uid": os.geteuid(), "audit": False, "errors": []}

def _fail(msg):
    _st["errors"].append(msg)
    os.write(_cfg["status_fd"], json.dumps(_st).encode())
    os.close(_cfg["status_fd"])
    sys.stderr.write("sandbox setup failed: " + msg + "\n")
    os._exit(71)

def _unshare(flags):
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(flags) == 0:
            return None
        return os.strerror(ctypes.get_errno())
    except Exception as e:
        return repr(e)

with open(_cfg["program"], "rb") as _f:
    _src = _f.read()

_NEWNET, _NEWUSER = 0x40000000, 0x10000000
if _cfg["netns"] and os.geteuid() == 0:
    _err = _unshare(_NEWNET)
    if _err is None:
        _st["netns"] = True
    else:
        _st["errors"].append("unshare(NEWNET): " + _err)
if _cfg["uid"] is not None:
    try:
        os.setgroups([])
        os.setgid(_cfg["gid"])
        os.setuid(_cfg["uid"])
        _st["uid"] = os.geteuid()
    except OSError as e:
        _fail("dropping privileges: " + str(e))
if _cfg["netns"] and not _st["netns"]:
    _err = _unshare(_NEWUSER | _NEWNET)
    if _err is None:
        _st["netns"] = True
    else:
        _st["errors"].append("unshare(NEWUSER|NEWNET): " + _err)
for _m in [m for m in sys.modules if m == "ctypes" or m.startswith("ctypes.") or m == "_ctypes"]:
    del sys.modules[_m]
if _cfg["require_netns"] and not _st["netns"]:
    _fail("no network namespace available")
try:
    for _name, _val in _cfg["limits"].items():
        resource.setrlimit(getattr(resource, _name), tuple(_val))
except (OSError, ValueError) as e:
    _fail("setrlimit: " + str(e))

def _install_hook(cwd, read_roots):
    """Build the audit hook in a closure so the program cannot reach its state."""
    fspath, stat, isinstance_, str_, bytes_, int_ = os.fspath, os.stat, isinstance, str, bytes, int
    perm = PermissionError
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    blocked = frozenset([
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "os.chdir",
        "os.link", "os.symlink", "resource.setrlimit", "resource.prlimit",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.remote_exec",
        "sqlite3.enable_load_extension", "sqlite3.load_extension",
    ])
    blocked_prefixes = ("socket.", "ctypes.", "_winapi.", "winreg.")
    blocked_imports = ("ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters",
                       "_testcapi", "_testinternalcapi", "_socket", "socket", "_ssl", "ssl")
    # event -> (indices of path arguments, indices of dir_fd arguments that must be None)
    mutating = {
        "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
        "os.rename": ((0, 1), (2, 3)), "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)),
        "os.truncate": ((0,), ()), "os.utime": ((0,), (3,)), "os.mkfifo": ((0,), (2,)),
        "os.mknod": ((0,), (3,)), "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()),
        "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()), "shutil.rmtree": ((0,), (1,)),
        "sqlite3.connect": ((0,), ()),
    }
    devices = ("/dev/null", "/dev/urandom", "/dev/random", "/dev/zero")

    def norm(p):
        if not (isinstance_(p, str_) or isinstance_(p, bytes_)):
            p = fspath(p)
        if isinstance_(p, bytes_):
            p = bytes_.decode(p, "utf-8", "surrogateescape")
        p = str_.__add__("", p)  # exact str: a subclass cannot override the methods below
        if not p.startswith("/"):
            p = cwd + "/" + p
        parts = []
        for part in p.split("/"):
            if part == "" or part == ".":
                continue
            if part == "..":
                if parts:
                    parts.pop()
            else:
                parts.append(part)
        return "/" + "/".join(parts)

    def inside(p, root):
        return p == root or p.startswith(root + "/")

    def deny(event, detail=""):
        raise perm("sandbox: " + event + " is not allowed" + (" (" + detail + ")" if detail else ""))

    def hook(event, args):
        if event in blocked or event.startswith(blocked_prefixes):
            deny(event)
        if event == "import":
            name = args[0]
            if isinstance_(name, str_) and (name in blocked_imports or name.startswith("ctypes.")):
                deny("import " + name)
            return
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            if isinstance_(path, int_):
                return  # an already open descriptor
            write = bool(flags & write_flags) if isinstance_(flags, int_) else False
            if isinstance_(mode, str_):
                for c in "wax+":
                    if c in mode:
                        write = True
            if write and not (isinstance_(path, str_) or isinstance_(path, bytes_)):
                deny("open", "write through a path object")
            p = norm(path)
            if inside(p, cwd):
                return
            if write:
                deny("open", "write outside the working directory: " + p)
            if p in devices:
                return
            for root in read_roots:
                if inside(p, root):
                    try:
                        is_dir = (stat(p).st_mode & 0o170000) == 0o040000
                    except OSError:
                        return
                    if is_dir:  # a directory fd would let dir_fd= escape the cwd check
                        deny("open", "directory outside the working directory")
                    return
            deny("open", "read outside the working directory: " + p)
        spec = mutating.get(event)
        if spec is not None:
            for i in spec[1]:
                if i < len(args) and args[i] is not None and args[i] != -100:
                    deny(event, "dir_fd")
            for i in spec[0]:
                if i < len(args) and not isinstance_(args[i], int_):
                    p = norm(args[i])
                    if not inside(p, cwd):
                        deny(event, "outside the working directory: " + p)

    sys.addaudithook(hook)

if _cfg["audit"]:
    _install_hook(os.getcwd(), tuple(os.path.abspath(p) for p in sys.path if p))
    _st["audit"] = True
sys.dont_write_bytecode = True
os.write(_cfg["status_fd"], json.dumps(_st).encode())
os.close(_cfg["status_fd"])
del _cfg, _st, _f, _fail, _unshare, _install_hook
import types as _types
_mod = _types.ModuleType("__main__")
_mod.__dict__["__builtins__"] = __builtins__
_mod.__file__ = "program.py"
sys.modules["__main__"] = _mod
_code = compile(_src, "program.py", "exec")
del _src, _types
exec(_code, _mod.__dict__)
