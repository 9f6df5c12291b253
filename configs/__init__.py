"""The shipped configs (each defines ``cfg``), loadable by name: ``densemnv3 configs`` lists them.

Installed, this folder is the package ``densemnv3.configs`` (in a clone ``densemnv3/configs`` links
here). A derived config imports its base from it: ``from densemnv3.configs.lraspp_cityscapes
import cfg``.
"""
