"""Serves kmock's KubernetesEmulator on a free loopback port until stdin closes.

Prints the server's URL on the first line of stdout. Used by tests/kmock.rs to cross-check the
Keelson test API server against a Kubernetes emulator nobody here wrote.
"""
import asyncio
import sys

import kmock


async def main() -> None:
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
        print(f"http://{server.host}:{server.port}", flush=True)
        # Run until the parent closes our stdin (or dies).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
