"""`klpdiff build`: from source patches and a kernel tree (yours, or a distribution's stock kernel
fetched by name) to a livepatch module, compiling only the affected objects in a shadow of the tree.
"""
