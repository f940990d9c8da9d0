"""pyoops.interface"""
