"""pyoops.generic"""
