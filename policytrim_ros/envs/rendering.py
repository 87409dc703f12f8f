"""Offscreen rendering of MuJoCo cameras for the simulated envs, and the GL threading rule.

``OffscreenRenderer`` owns one ``mujoco.Renderer`` (its GL context, created on the first render)
and renders named or free cameras without shadows, reflections or skybox. After every render the
calling thread's GL context is released (``release_gl_context``), so that ROS executors may render
from any thread of their pool. ``add_pixel_noise`` is the envs' image noise.
"""
from __future__ import annotations

import atexit
import os
import weakref

import mujoco
import numpy as np


def release_gl_context() -> None:
    """Unbind the calling thread's GL context so that the next render may come from any thread.

    An EGL or GLFW context is current in one thread at a time, and ROS executors call from thread
    pools: without this, rendering from a second thread fails with EGL_BAD_ACCESS.
    """
    backend = os.environ.get('MUJOCO_GL', 'egl').lower()
    if backend == 'egl':
        from mujoco import egl  # the backend modules only import under their own MUJOCO_GL
        egl.EGL.eglMakeCurrent(egl.EGL_DISPLAY, egl.EGL.EGL_NO_SURFACE, egl.EGL.EGL_NO_SURFACE,
                               egl.EGL.EGL_NO_CONTEXT)
    elif backend == 'osmesa':
        from OpenGL import GL, osmesa
        osmesa.OSMesaMakeCurrent(None, None, GL.GL_FLOAT, 0, 0)
    elif backend == 'glfw':
        import glfw
        glfw.make_context_current(None)


def _close_if_alive(renderer: weakref.ref) -> None:
    if renderer() is not None:
        renderer().close()


class OffscreenRenderer:
    """Renders cameras of ``model`` at ``height`` x ``width`` px; ``close`` frees the GL context.

    close_at_exit: also free it when the interpreter exits, before EGL is torn down (else an error
        at exit), if this renderer is still alive then.
    """

    def __init__(self, model: mujoco.MjModel, height: int, width: int, close_at_exit: bool = False) -> None:
        self.model, self.height, self.width = model, height, width
        self._close_at_exit = close_at_exit
        self._renderer: mujoco.Renderer | None = None

    def render(self, data: mujoco.MjData, cameras) -> list[np.ndarray]:
        """(H, W, 3) uint8 RGB of each camera (a name or a ``mujoco.MjvCamera``) in ``cameras``, in order."""
        try:
            if self._renderer is None:
                self._renderer = mujoco.Renderer(self.model, self.height, self.width)
                if self._close_at_exit:
                    atexit.register(_close_if_alive, weakref.ref(self))
            images = []
            for camera in cameras:
                self._renderer.update_scene(data, camera=camera)
                flags = self._renderer.scene.flags
                for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                             mujoco.mjtRndFlag.mjRND_SKYBOX):
                    flags[flag] = 0  # several times faster on a software GL; the scenes need none of them
                images.append(self._renderer.render())
        finally:
            release_gl_context()
        return images

    def close(self) -> None:
        """Free the GL context (a later render creates a new one)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def add_pixel_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` (uint8) plus Gaussian noise of ``std`` (0-255 units), rounded and clipped to uint8."""
    noisy = image + rng.normal(0.0, std, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
