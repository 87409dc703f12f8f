"""``policytrim serve``: a checkpoint served over openpi's websocket policy-server protocol."""
from __future__ import annotations

import ipaddress
import os
import signal
import sys

from policytrim_ros.policy import wire

API_KEY_ENV = 'POLICYTRIM_API_KEY'


def add_parsers(sub) -> None:
    p = sub.add_parser('serve', help="serve a checkpoint over openpi's websocket protocol (the remote backend's)",
                       description='Serves CHECKPOINT (torch or onnx) to remote clients: policy_node with '
                                   'policy.backend remote, or any openpi client. Binds to 127.0.0.1 unless '
                                   '--host says otherwise; with an API key set (the environment variable '
                                   f'{API_KEY_ENV}, or --api-key-env names another) it refuses connections '
                                   "without 'Authorization: Api-Key <key>'. GET /healthz answers 200. "
                                   'docs/policy-server.md.')
    p.add_argument('checkpoint', help='checkpoint directory (or package://policytrim_ros/models/...)')
    p.add_argument('--backend', choices=('torch', 'onnx'), default='torch', help='how to run it (default torch)')
    p.add_argument('--host', default='127.0.0.1',
                   help='address to bind (default 127.0.0.1, this machine only; 0.0.0.0 = every interface: '
                        'set an API key)')
    p.add_argument('--port', type=int, default=wire.DEFAULT_PORT,
                   help=f'port (default {wire.DEFAULT_PORT}, openpi\'s; 0 = any free port, printed)')
    p.add_argument('--api-key-env', default=API_KEY_ENV,
                   help=f'environment variable holding the API key (default {API_KEY_ENV}; unset or empty = no key). '
                        'The key is not a command-line argument: others can read those in the process list')
    p.add_argument('--max-frame-mb', type=float, default=4.0,
                   help='largest observation frame accepted, MiB (default 4); a bigger one closes its connection')
    p.add_argument('--device', default='cpu', help="torch device ('cpu', 'cuda', 'cuda:1')")
    p.add_argument('--num-threads', type=int, default=0, help="CPU threads per inference (0 = the library's default)")
    p.set_defaults(func=serve)


def _is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(args) -> int:
    from policytrim_ros.policy.factory import PolicyConfig, checkpoint_chunk_size, make_policy
    from policytrim_ros.policy.checkpoint import read_checkpoint_config
    from policytrim_ros.policy.server import PolicyServer
    from policytrim_ros import resources

    if not 0 <= args.port <= 65535:
        raise ValueError(f'--port {args.port} must be 0-65535')
    if not args.max_frame_mb > 0:
        raise ValueError(f'--max-frame-mb {args.max_frame_mb} must be > 0')
    config = PolicyConfig(backend=args.backend, checkpoint=args.checkpoint, device=args.device,
                          num_threads=args.num_threads)
    joints = tuple(read_checkpoint_config(resources.resolve(args.checkpoint))[0].joint_names)
    policy = make_policy(config, checkpoint_chunk_size(args.checkpoint), 0.1, joints)  # dt: unused by learned backends
    api_key = os.environ.get(args.api_key_env, '') if args.api_key_env else ''
    server = PolicyServer(policy, args.host, args.port, api_key=api_key, max_frame_bytes=int(args.max_frame_mb * 2 ** 20),
                          name=args.checkpoint)
    meta = policy.metadata
    server.warm_up()
    if not api_key and not _is_loopback(args.host):
        print(f'policytrim serve: warning: listening on {args.host} without an API key: anyone who reaches this '
              f'port can move your robot; set {args.api_key_env}', file=sys.stderr)
    print(f'policytrim serve: {meta.name} {args.checkpoint} (H={meta.chunk_size}, joints {list(meta.joint_names)}, '
          f'cameras {list(meta.cameras) or meta.num_cameras} of {meta.camera_image_size[1]}x{meta.camera_image_size[0]}) '
          f"on ws://{args.host}:{server.port}{' (API key required)' if api_key else ''}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0
