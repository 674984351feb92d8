"""A TCP proxy between orgplane and PostgreSQL that db-outage.sh cuts.

  tcp_proxy.py LISTEN_PORT UPSTREAM_PORT MODE

Forwards 127.0.0.1:LISTEN_PORT to 127.0.0.1:UPSTREAM_PORT. SIGUSR1 starts
the outage, SIGUSR2 ends it. MODE `cut`: every link is closed and the port
refuses connections (a database that went away); MODE `blackhole`: links
stay open but no byte moves, and new connections are accepted and left
hanging (a network partition), until the outage ends and bytes flow again.
"""
import asyncio
import signal
import time
import sys

listen_port, upstream_port, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
flowing = asyncio.Event()
links = set()
server = None


async def pipe(reader, writer, name):
    why = "eof"
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            await flowing.wait()
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.CancelledError) as e:
        why = repr(e)
    finally:
        print(f"proxy: {time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {name} ended: {why}", flush=True)
        writer.close()


async def handle(client_reader, client_writer):
    await flowing.wait()
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    except OSError:
        client_writer.close()
        return
    tasks = [asyncio.ensure_future(pipe(client_reader, up_writer, 'client->db')),
             asyncio.ensure_future(pipe(up_reader, client_writer, 'db->client'))]
    link = (client_writer, up_writer, tuple(tasks))
    links.add(link)
    await asyncio.gather(*tasks, return_exceptions=True)
    links.discard(link)


async def listen():
    global server
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, reuse_address=True)


def start_outage():
    print(f"proxy: outage ({mode})", flush=True)
    flowing.clear()
    if mode == "cut":
        server.close()
        for client_writer, up_writer, tasks in list(links):
            for t in tasks:
                t.cancel()
            client_writer.transport.abort()
            up_writer.transport.abort()


def end_outage():
    print("proxy: outage over", flush=True)
    flowing.set()
    if mode == "cut":
        asyncio.ensure_future(listen())


async def main():
    flowing.set()
    await listen()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, start_outage)
    loop.add_signal_handler(signal.SIGUSR2, end_outage)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    print(f"proxy: 127.0.0.1:{listen_port} -> 127.0.0.1:{upstream_port}", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
